"""Other tools' weights: `pt_reader` reads a `.pt` without running its code, `importers` maps it onto our models
(`import_weights`, `save_imported`, `load_weights`), `command` is `accelyolo import`."""
