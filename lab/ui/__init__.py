"""What users look at: figures (``plots``), the interactive explorer (``widgets``), its web app (``app``) and
parameterized reports (``report``). Loaded on first use: ``import lab`` never imports matplotlib or ipywidgets."""
