"""The device farm (docs/farm.md), a service over the runtime core (`edgecompress.runtime`: device
vocabulary, runner, executors, logits): the controller service (`controller`) over its job store
(`store`, `tables`, `retention`, cross-controller wake-ups: `notify`), identities (`identity`, admin
client: `admin`), result checks (`results`), the device agent (`agent`), the client (`client`), a
loopback farm with emulated agents (`local`), a throwaway PostgreSQL server (`pgserver`) and the farm
commands (`commands`: `edgecompress farm …` and `python -m edgecompress.farm …`)."""
