"""See evit_mm/analysis/model_zoo.py."""
from evit_mm.analysis.model_zoo import main

if __name__ == '__main__':
    main()
