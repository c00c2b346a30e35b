"""Reports: what one robust test and one run leave behind.

:mod:`.report` builds each test's report dict, its failure line, the terminal table
and the JSON file (:mod:`.tables` renders every table, :mod:`.jsonfiles` reads the
files back); :mod:`.baseline` saves and loads the baseline file; :mod:`.markdown`
writes the CI job summary; :mod:`.pictures` draws a test's gallery and curve
(:mod:`.images`, :mod:`.image_cells`, :mod:`.layout`); :mod:`.generated_text` and
:mod:`.generated_gallery` say and draw what ``attack="generated"`` found.
"""
