from medsort.cli import main

raise SystemExit(main())
