"""See evit_mm/deployment/benchmark.py."""
import warnings

# mmengine imports pkg_resources, whose deprecation warning would open every run's output
warnings.filterwarnings('ignore', message='pkg_resources is deprecated')

from evit_mm.deployment.benchmark import main  # noqa: E402

if __name__ == '__main__':
    main()
