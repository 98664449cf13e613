"""One HTTP call each: the transport seam, error decoding, wire conversion, profiles
(routes, auth, documented rules) and image checks."""
