from report_gen.cli import run

run()
