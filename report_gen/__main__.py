from report_gen.cli import main

raise SystemExit(main())
