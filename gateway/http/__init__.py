"""HTTP resources, one module each: operations, jobs, and the system endpoints."""
