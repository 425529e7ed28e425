from mlm_adapt.cli import main

main()
