"""Export jobs (JSON, SVG, PNG, PDF of a room) and the worker that renders them."""
