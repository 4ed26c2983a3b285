"""``python -m alcore``: the numeric settings as shell exports (``eval "$(python -m alcore)"``),
for a process that loads NumPy before it imports the project, such as a Dask worker."""

from alcore import numerics

print(numerics.exports())
