"""Command-line interface: `mar3d <command>`."""
