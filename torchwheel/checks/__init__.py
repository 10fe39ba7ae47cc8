"""Pre-deploy checks of Lambda layer and function zips (see :mod:`.driver`)."""
