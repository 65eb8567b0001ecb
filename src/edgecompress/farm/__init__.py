"""The device farm: benchmark runner, device facts, device classes, (controller, agent, client)."""
