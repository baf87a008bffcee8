"""pneumo as a DICOM node beside a PACS: films arrive by C-STORE, a Structured Report and a heatmap
Secondary Capture go back into the same study, with an on-disk queue so nothing is lost.

Modules: :mod:`~pneumo.dicomnode.node` (the SCP, the workers, the sender), :mod:`~pneumo.dicomnode.results`
(the SR and the Secondary Capture), :mod:`~pneumo.dicomnode.picture` (the burned-in picture) and
:mod:`~pneumo.dicomnode.spool` (the queue). Nothing is imported here, so ``--status`` starts without
loading PyTorch or pynetdicom.
"""
