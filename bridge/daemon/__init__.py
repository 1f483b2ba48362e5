"""The long-running service: sources, the main loop, systemd integration, clean shutdown."""
