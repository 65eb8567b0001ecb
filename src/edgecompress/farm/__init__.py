"""The device farm (docs/farm.md): benchmark runner (`runner`, model check in its child: `modelcheck`),
device facts (`device`), device classes (`devices`), the controller service (`controller`) over its job
store (`store`, `tables`, `retention`, cross-controller wake-ups: `notify`), identities (`identity`,
admin client: `admin`), result checks (`results`), the device agent (`agent`), the client (`client`),
a loopback farm with emulated agents (`local`) and a throwaway PostgreSQL server (`pgserver`)."""
