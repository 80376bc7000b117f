from collab_server.cli import main

raise SystemExit(main())
