from livswap.cli import entry_point

if __name__ == "__main__":  # also imported by spawned worker processes
    entry_point()
