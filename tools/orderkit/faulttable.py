"""The simulator's built-in fault table (simulator/catalogue.json): who and what it knows."""

import os

from . import ROOT

PATH = os.path.join(ROOT, "simulator", "catalogue.json")
ADA = "7c11e1ce2741"   # answers 200 after 300 ms
ALAN = "e6f24d7d1c7e"  # answers 500, then 200 (a retry succeeds)
