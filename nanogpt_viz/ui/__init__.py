"""Everything Qt lives here; the logic it shows lives in the pure modules one level up."""
