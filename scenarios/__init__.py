"""The scenario catalog: one TOML file per site set-up or failure, with the outcome a
client must show. Read and run by ``dbdsim scenario`` (``emulators.scenarios``)."""
