"""The core: errors, models, configuration objects, the clock, redaction. No I/O, and no
imports of other rooms."""
