"""`evalkit listen`: a local listening test over the clips of finished runs.

The data flow, one module per step:

    runs (evalkit.runs.load_run)
      -> catalog   what is rated: systems (the runs, plus hidden anchors), clips and items, all
                   behind opaque ids, and the digest of the test (`select`, then `build`)
      -> plan      what one rater hears, in which order: a seeded shuffle per rater, the
                   attention repeats, the side/slot order of every item
      -> app       the web pages (Starlette + Jinja2, served by uvicorn): start, rate, done
      -> store     every rating in sqlite (WAL), one row per rating, replays refused
      -> stats     MOS / MUSHRA means with a rater x utterance bootstrap CI, A/B preference with
                   a Wilson CI, rater screening by the attention repeats
      -> export    the ratings CSV (`evalkit correlate --ratings` reads it) and the MLflow record
                   of each run (through evalkit.tracking, the only module that imports mlflow)

The web framework (starlette, uvicorn) is the `listen` extra, imported only by `app`; everything
else here runs on the core dependencies.
"""
