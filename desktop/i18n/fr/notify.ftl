# Les notifications du bureau : jamais le texte d'un message, sauf si l'utilisateur l'a permis.

notify-new-messages = { $count ->
    [one] Nouveau message
   *[other] { $count } nouveaux messages
}
notify-text-in-group = { $sender } : { $text }
