"""Plan: composite sensitivity, budgets, the allocator, and the recipe that carries a plan out."""
