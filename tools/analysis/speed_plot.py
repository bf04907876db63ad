"""See evit_mm/analysis/speed_plot.py."""
from evit_mm.analysis.speed_plot import main

if __name__ == '__main__':
    main()
