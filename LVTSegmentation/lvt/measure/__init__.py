"""Numbers and shapes from a label map: volumes, lesions, surfaces, planning, the report."""
