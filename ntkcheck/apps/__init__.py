"""Applications, thin compositions of the stages: :mod:`.verify`, :mod:`.ntk`, :mod:`.reproduce` and :mod:`.sweep`."""
