"""Evaluate a deployed model on the model config's test set: see evit_mm/deployment/evaluate.py."""
from evit_mm.deployment.evaluate import main

if __name__ == '__main__':
    main()
