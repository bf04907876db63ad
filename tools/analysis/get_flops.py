"""See evit_mm/analysis/complexity.py."""
from evit_mm.analysis.complexity import main

if __name__ == '__main__':
    main()
