from shopstream.cli import app

# Guarded: the warehouse writer process is started with "spawn", which imports __main__.
if __name__ == "__main__":
    app()
