"""The local control plane: the daemon that reconciles the store with running processes."""
