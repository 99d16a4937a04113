# La liste des conversations.

conversations-title = Conversations
conversations-empty = Aucune conversation pour l'instant.
conversations-new-label = Nouvelle conversation
conversations-new-hint = nom de la personne
conversations-new-open = Ouvrir
conversations-unread = { $count ->
    [one] 1 non lu
   *[other] { $count } non lus
}
conversations-joining = Groupe en cours d'arrivée…
conversations-left = { $name } (quittée)
conversations-no-message = Aucun message
conversations-preview-own = Vous : { $text }
