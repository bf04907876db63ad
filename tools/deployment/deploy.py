"""See evit_mm/deployment/deploy.py."""
from evit_mm.deployment.deploy import main

if __name__ == '__main__':
    main()
