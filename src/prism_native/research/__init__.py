"""Research: measured quality (eval), ablations and the fit of the composite's weights."""
