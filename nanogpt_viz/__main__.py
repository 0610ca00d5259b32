from nanogpt_viz.cli import main

raise SystemExit(main())
