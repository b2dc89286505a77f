from kvclient.cli import main

main()
