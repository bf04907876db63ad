"""See evit_mm/analysis/onnx_export.py."""
from evit_mm.analysis.onnx_export import main

if __name__ == '__main__':
    main()
