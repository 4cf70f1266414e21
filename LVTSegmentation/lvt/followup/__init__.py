"""Several studies of one patient: registration, lesion matching, RECIST, volumetry."""
