"""Qt dialogs of ModalSeg: front ends to what the Processing algorithms do; no logic of their own."""
