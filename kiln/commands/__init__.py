"""The commands, as library functions: what `kiln predict`, `export`, `tune`, `cv`, `report`, `new`, `baseline`,
`inspect` and `doctor` do. `kiln train` and `kiln test` are the engine's own (kiln.train.session, kiln.train.evaluation):
a tune trial, a cv fold and the end of every run call them too. The CLI (kiln.cli) parses arguments and maps errors
to exit codes."""
