import sys

from il2pkpd.cli import main

sys.exit(main())
