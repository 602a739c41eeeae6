"""Builders shared by the tests and the benchmarks: synthetic inputs written in the real formats.

- `event_builders`: TensorBoard event records (scalars, histograms, images, hparams), framed and CRC'd.
- `ckpt_builders`: checkpoints in every container report_gen reads (torch zip, legacy, safetensors, ...).
- `rulekit`: RunFacts built in memory for rule tests (`make_run`, `series`, `hist`, `hits`).
- `realfix`: the committed real-library fixtures (tests/fixtures/real) and their manifests.
- `sample_report`: a report dict with every section, for the render tests.
- `sweep_kit`: generated sweep runs and a local S3 server (moto) for the storage and sweep tests.
- `hostile_tools`, `memtools`, `integration_kit`: bounded subprocesses, peak memory, tiny trainings.

Importable as `builders` (pytest puts tests/ on sys.path: `pythonpath` in pyproject.toml) or as
`tests.builders` from the repository root.
"""
