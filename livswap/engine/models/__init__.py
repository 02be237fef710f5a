"""Neural networks as plain ``nn.Module``s, configured through their constructors."""
