from livswap.cli import entry_point

entry_point()
