"""BIDS: datasets as a data source (:mod:`.source`), the BIDS App (:mod:`.app`), the
derivatives it writes (:mod:`.derivatives`) and its QC report (:mod:`.report`); the App's
one interface to the models is :mod:`.predict`."""
