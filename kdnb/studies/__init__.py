"""Each part's study in one home: its scales, run lists, tables and verdict rules."""
