"""The device farm (docs/farm.md): benchmark runner (`runner`), device facts (`device`), device
classes (`devices`), the controller service and its job store (`controller`, `store`), the device
agent (`agent`), the client (`client`) and a loopback farm with emulated agents (`local`)."""
