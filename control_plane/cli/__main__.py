"""`python -m control_plane.cli`: how `tenantctl dev`, the tests and the benchmarks start processes."""

from control_plane.cli import main

main()
