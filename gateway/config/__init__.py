"""Configuration: strict schema, loader with file:line errors, runtime assembly and reload."""
