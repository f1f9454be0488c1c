"""Easy Smart Monitor backend: the package shared by every function."""
