from ipvsmgr.cli import main

main()
