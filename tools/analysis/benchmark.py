"""See evit_mm/analysis/benchmark.py."""
from evit_mm.analysis.benchmark import main

if __name__ == '__main__':
    main()
