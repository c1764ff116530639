import sys

from benchmarks.decision_quality.runner import main

sys.exit(main())
